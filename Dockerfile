# Atelier on a GPU host. The image carries no weights: they are downloaded into the data volume
# on first start (or mounted there). The Discord token is passed at run time, never baked in:
#   docker build -t atelier .
#   docker run --gpus all -e ATELIER_DISCORD_TOKEN=... -v atelier-data:/data atelier
# A worker-only host (no token needed):  docker run --gpus all -v ... atelier atelier worker
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ATELIER_DATA_DIR=/data \
    HF_HOME=/data/huggingface

WORKDIR /app
# torch first and pinned, as everywhere else: the CUDA build from PyPI is what a GPU host wants.
RUN pip install torch==2.13.0
COPY requirements.lock ./
RUN pip install -r requirements.lock
COPY pyproject.toml README.md ./
COPY config ./config
COPY generation ./generation
COPY storage ./storage
COPY bot ./bot
RUN pip install --no-deps . && useradd --create-home atelier && mkdir -p /data && chown atelier /data

USER atelier
VOLUME ["/data"]
CMD ["atelier", "run"]
