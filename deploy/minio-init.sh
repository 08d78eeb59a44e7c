#!/bin/sh
# minio-init (docker-compose.yaml), in the mc image: the artifact bucket and MLflow's access key,
# allowed that bucket only, so MLflow never holds MinIO's root keys. Idempotent: the bucket is
# kept, the key's secret is set again from the environment (.env stays the truth).
set -eu
: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${MINIO_MLFLOW_USER:?}" "${MINIO_MLFLOW_PASSWORD:?}"
bucket="${MLFLOW_BUCKET:?}"
policy=mlflow-artifacts

mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "local/$bucket"
cat >/tmp/policy.json <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:ListBucket"],
     "Resource": ["arn:aws:s3:::$bucket"]},
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
     "Resource": ["arn:aws:s3:::$bucket/*"]}
  ]
}
JSON
mc admin policy create local "$policy" /tmp/policy.json
mc admin user add local "$MINIO_MLFLOW_USER" "$MINIO_MLFLOW_PASSWORD"
# attach fails when the policy is attached already (every re-run): check rather than ignore.
if ! mc admin user info local "$MINIO_MLFLOW_USER" | grep -q "$policy"; then
  mc admin policy attach local "$policy" --user "$MINIO_MLFLOW_USER"
fi
