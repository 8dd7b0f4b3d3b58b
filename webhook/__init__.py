"""kube-agent-guard: a server-side guard that keeps LLM agents from harming a Kubernetes cluster."""
