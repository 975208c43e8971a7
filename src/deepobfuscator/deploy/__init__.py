"""Deployment: export to ONNX with a manifest, the feature wire format, the cloud service,
its client and the on-device benchmark.

Nothing is imported here on purpose: `deploy.client`, `deploy.wire` and
`deploy.preprocess_np` must stay importable without torch (the phone side).
"""
