"""A real control plane for the end-to-end suite: kube-apiserver and etcd, built from source.

There is no Docker engine to run kind in, and nothing may be downloaded except through package
registries, so the suite builds both binaries from the Go module proxy (``binaries``) and runs them as
local processes (``processes``), the way controller-runtime's envtest does. The Go modules that pin the
versions live next to this package: ``kube-apiserver/go.mod`` and ``etcd/go.mod``.
"""
