# One image for every lab process; the extra chosen at build time decides what is in it.
#   docker build --build-arg EXTRA=bot .      (no torch)
#   docker build --build-arg EXTRA=worker .   (torch from PyPI: the CUDA build)
FROM python:3.11-slim
ARG EXTRA=worker
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 LORALAB_HOME=/data
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY lab lab
COPY db db
COPY bot bot
COPY worker worker
COPY trainer trainer
COPY migrations migrations
COPY loralab loralab
RUN pip install ".[${EXTRA}]"
RUN useradd --create-home lab && mkdir -p /data && chown lab /data
USER lab
ENTRYPOINT ["loralab"]
