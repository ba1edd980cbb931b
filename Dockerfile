# The lsm3 compactor as a small image; docker-compose.yml runs it next to MinIO.
#   docker build -t lsm3-compactor .
#   docker run --rm -e AWS_ENDPOINT_URL=... lsm3-compactor lsm3-compactor --once s3://bucket/table
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AWS_EC2_METADATA_DISABLED=true

WORKDIR /src
COPY pyproject.toml README.md ./
COPY lsm3 ./lsm3
COPY catalog ./catalog
COPY compactor ./compactor
RUN pip install --no-cache-dir . && rm -rf /src

WORKDIR /
USER nobody
CMD ["lsm3-compactor", "--help"]
