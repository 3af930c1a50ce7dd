"""The imgsim web service: Flask app, routes, input loading, auth and the Milvus store."""
