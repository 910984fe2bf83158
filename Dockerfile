# Serving image: onnxruntime, no PyTorch. Models come from a mounted model repository.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY axon ./axon
COPY server ./server
COPY clients ./clients
COPY training ./training
# Base install only: the training extra (torch) is deliberately left out.
RUN pip install --no-cache-dir .
ENV AXON_MODEL_REPOSITORY=/models
VOLUME ["/models"]
ENTRYPOINT ["axon"]
CMD ["--help"]
