"""The image embedder: Keras 3 ResNet50 features as L2-normalised 2048-d vectors."""
