# Two images from one file:
#   docker build .                -> the serving image: onnxruntime (CPU), no PyTorch (the last stage)
#   docker build --target train . -> the training image: PyTorch (CPU) to make models
# Models pass between them through a mounted model repository (see docker-compose.yml).

# The sources both images install, copied once.
FROM python:3.11-slim AS source
WORKDIR /app
COPY pyproject.toml README.md ./
COPY axon ./axon
COPY server ./server
COPY clients ./clients
COPY training ./training
COPY benchmarks ./benchmarks

# Training image. Runs as root: it writes into a bind-mounted host folder whose owner it cannot
# know; the serving image only reads it.
FROM python:3.11-slim AS train
# torch first, from the CPU index: PyPI's default wheel is a multi-GB CUDA build. Its own layer,
# so editing the sources does not download it again.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
WORKDIR /app
COPY --from=source /app ./
RUN pip install --no-cache-dir '.[cpu,train]'
ENV AXON_MODEL_REPOSITORY=/models
ENTRYPOINT ["axon"]
CMD ["quickstart", "--no-serve"]

# Serving image: onnxruntime, no PyTorch. Models come from a mounted model repository.
# Keep this stage last: it is what `docker build .` produces.
FROM python:3.11-slim AS serve
WORKDIR /app
COPY --from=source /app ./
# The base install and the `cpu` extra (onnxruntime); the training extra (torch) is deliberately
# left out. A GPU image would install '.[gpu]' on a CUDA base image instead.
RUN pip install --no-cache-dir '.[cpu]' && useradd --system --uid 10001 --no-create-home axon
# Numeric, so Kubernetes can enforce runAsNonRoot (deploy/kubernetes sets runAsUser 10001).
USER 10001:10001
ENV AXON_MODEL_REPOSITORY=/models
VOLUME ["/models"]
# HTTP/REST, gRPC, and Prometheus metrics at /metrics (ServerSettings.http_address / .address /
# .metrics_address).
EXPOSE 8000 8001 8002
# grpc.health.v1 over the real port (`axon health`, server/health_check.py), reached as the
# server's AXON_* settings say: plain text, TLS (trusting the server's own certificate), mutual
# TLS (presenting AXON_HEALTH_TLS_CERT/_KEY, else the server's own certificate). It sees the
# container's environment, not `serve`'s flags: give TLS settings as AXON_* variables.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s CMD ["axon", "health"]
ENTRYPOINT ["axon"]
CMD ["serve"]
