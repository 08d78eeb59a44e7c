# syntax=docker/dockerfile:1
# MLflow tracking server + registry: bin/mlflow-server, the same entrypoint the tests run natively,
# with its basic-auth app (extra `auth`); bin/mlflow-users creates the API's read-only user.
# Packages from uv.lock (dependency group mlflow-server), hash-checked like the other images'.
# Build: docker build -f docker/mlflow.Dockerfile -t readmission-mlflow .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN pip install --no-cache-dir uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --only-group mlflow-server --no-install-project

FROM ${PYTHON_IMAGE}
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp mlflow
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY bin/mlflow-server bin/mlflow-users ./bin/
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp \
    MLFLOW_HOST=0.0.0.0 MLFLOW_PORT=5000
USER 10001:10001
EXPOSE 5000
ENTRYPOINT ["bin/mlflow-server"]
