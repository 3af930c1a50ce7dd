# imgsim API image: `docker build -t imgsim .` then `docker run --init -p 7000:7000 imgsim`
# (or `docker compose up -d`, which also runs Milvus standalone and Attu).
#
# Without MILVUS_URI the container keeps the vectors in Milvus Lite under /app/data, which is
# lost with the container unless /app/data is a volume: point MILVUS_URI at a Milvus server instead.
FROM python:3.11-slim

# The app runs as this user. Bind-mounted folders (the Keras weight cache, the shared image folder)
# must be writable by it: build with --build-arg APP_UID=$(id -u) to match the host user that owns them.
ARG APP_UID=1000
ARG APP_GID=1000

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, in their own layer, so editing the code does not reinstall TensorFlow.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

RUN groupadd --gid "${APP_GID}" imgsim \
    && useradd --uid "${APP_UID}" --gid "${APP_GID}" --create-home --shell /usr/sbin/nologin imgsim \
    && mkdir -p /app/data /models /thumbs /sources /images \
    && chown imgsim:imgsim /app/data /models /thumbs /sources /images

# The code stays owned by root: the service cannot modify itself.
COPY main.py ./
COPY conf/ conf/
COPY model/ model/
COPY service/ service/

USER ${APP_UID}:${APP_GID}

EXPOSE 7000

# /health answers once the model is loaded (a first start downloads the 94 MB ImageNet weights,
# hence the long start period). python, not curl: the slim image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('API_PORT', '7000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=4).status == 200 else 1)"]

CMD ["python", "main.py", "serve"]
