FROM python:3.12-slim
WORKDIR /app
COPY setup.py pyproject.toml README.md ./
COPY tornado_gw ./tornado_gw
COPY config ./config
RUN pip install --no-cache-dir .
EXPOSE 8081
ENTRYPOINT ["python", "-m", "tornado_gw"]
CMD ["serve"]
