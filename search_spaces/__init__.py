"""DARTS-style cell search spaces with osep primitives, for NNI 3.0 and nnictl."""
