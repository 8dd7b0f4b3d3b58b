"""kube-agent-guard: a server-side guard that keeps LLM agents from harming a Kubernetes cluster."""

__version__ = "0.1.0"
