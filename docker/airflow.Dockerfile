# syntax=docker/dockerfile:1
# Airflow 3 with the project installed and its DAGs baked in. Compose runs one container per
# component with `airflow <component>` (api-server, scheduler, dag-processor, triggerer).
# Build: docker build -f docker/airflow.Dockerfile -t readmission-airflow .
# Python 3.11, as the API image and uv.lock (requires-python): a model trained here is loaded
# there with the same numpy, scipy and scikit-learn.
ARG AIRFLOW_IMAGE=apache/airflow:slim-3.3.2-python3.11

# requirements.txt (apache-airflow and every other dependency pinned as in uv.lock, with the lock's
# hashes: pip then checks every download against them) + the wheel.
FROM python:3.11-slim-bookworm AS build
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
RUN mkdir -p /out \
 && uv export --frozen --no-dev --extra airflow --no-emit-project \
      --output-file /out/requirements.txt \
 && uv build --wheel --out-dir /out/dist

FROM ${AIRFLOW_IMAGE}
RUN --mount=type=bind,from=build,source=/out,target=/tmp/build \
    pip install --no-cache-dir --require-hashes -r /tmp/build/requirements.txt \
 && pip install --no-cache-dir --no-deps /tmp/build/dist/*.whl
USER root
# Mount points of the named volumes, owned by airflow so the volumes inherit it.
RUN mkdir -p /opt/airflow/auth /opt/airflow/readmission /opt/airflow/logs \
 && chown -R airflow:root /opt/airflow/auth /opt/airflow/readmission /opt/airflow/logs
USER airflow
COPY --chown=airflow:root dags/ /opt/airflow/dags/
# $AIRFLOW_HOME/config is on Airflow's sys.path: the scheduler preloads what the tasks import.
COPY --chown=airflow:root airflow_config/airflow_local_settings.py /opt/airflow/config/
EXPOSE 8080
