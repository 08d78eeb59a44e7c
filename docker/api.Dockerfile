# syntax=docker/dockerfile:1
# The REST API: bin/api (uvicorn api.main:app), the same entrypoint the tests run natively.
# Build: docker build -f docker/api.Dockerfile -t readmission-api .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Dependencies from uv.lock into /opt/venv, then the project itself (not editable).
FROM ${PYTHON_IMAGE} AS build
RUN pip install --no-cache-dir uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra api --no-install-project
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --extra api --no-editable

FROM ${PYTHON_IMAGE}
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp app
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY bin ./bin
COPY api ./api
# HOME and MPLCONFIGDIR under /tmp: the root filesystem may be read-only (k8s).
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HOME=/tmp MPLCONFIGDIR=/tmp/matplotlib API_HOST=0.0.0.0 API_PORT=8000
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["bin/api"]
