"""Deployment helpers: the compose .env (dotenv) and the Kubernetes rollout (k8s)."""
