"""Deployment: export to ONNX with a manifest, the cloud service, its client and the
on-device benchmark (the feature wire format they share is deepobfuscator/wire.py).

Nothing is imported here on purpose: `deploy.client`, `deploy.preprocess_np` and the wire
format must stay importable without torch (the phone side).
"""
