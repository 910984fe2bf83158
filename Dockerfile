# Serving image: onnxruntime, no PyTorch. Models come from a mounted model repository.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY axon ./axon
COPY server ./server
COPY clients ./clients
COPY training ./training
# Base install only: the training extra (torch) is deliberately left out.
RUN pip install --no-cache-dir . && useradd --system --no-create-home axon
USER axon
ENV AXON_MODEL_REPOSITORY=/models
VOLUME ["/models"]
EXPOSE 8001
# grpc.health.v1 over the real port: the same check a Kubernetes gRPC probe makes.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD python -c "import grpc, sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; \
sys.exit(g.HealthStub(grpc.insecure_channel('127.0.0.1:8001')).Check(h.HealthCheckRequest(), timeout=2).status != h.HealthCheckResponse.SERVING)"
ENTRYPOINT ["axon"]
CMD ["serve"]
