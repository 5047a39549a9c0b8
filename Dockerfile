# One image for the whole tree: `python supervisor.py` starts migrations, web and actors.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HOST=0.0.0.0 \
    PORT=5000 \
    DATA_DIR=/data

WORKDIR /app
COPY setup.cfg pyproject.toml README.md alembic.ini supervisor.py ./
COPY config ./config
COPY vidwiz ./vidwiz
COPY actors ./actors
COPY migrations ./migrations
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app vidwiz \
    && mkdir -p /data && chown vidwiz /data

USER vidwiz
VOLUME ["/data"]
EXPOSE 5000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"5000\")}/ready', timeout=4)"
CMD ["python", "supervisor.py"]
