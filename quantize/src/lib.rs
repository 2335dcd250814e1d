//! edgeact's converter: Hugging Face checkpoints (safetensors, PyTorch `.bin`) to quantized
//! GGUF files, written by a streaming, atomic GGUF writer.
