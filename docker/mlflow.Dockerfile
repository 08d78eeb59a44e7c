# syntax=docker/dockerfile:1
# MLflow tracking server + registry: bin/mlflow-server, the same entrypoint the tests run natively,
# with its basic-auth app (extra `auth`); bin/mlflow-users creates the API's read-only user.
# Versions pinned as in uv.lock. Build: docker build -f docker/mlflow.Dockerfile -t readmission-mlflow .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}
RUN pip install --no-cache-dir "mlflow[auth]==3.17.2" psycopg2-binary==2.9.13 boto3==1.44.5 \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp mlflow
WORKDIR /app
COPY bin/mlflow-server bin/mlflow-users ./bin/
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp MLFLOW_HOST=0.0.0.0 MLFLOW_PORT=5000
USER 10001:10001
EXPOSE 5000
ENTRYPOINT ["bin/mlflow-server"]
