"""Deployment: a finished run as something to ship and run on audio (ONNX export, ONNX Runtime,
transcription of audio files). Sits above the recipes: it reads run folders through their loaders."""
