"""Post-training quantization of the float reference networks into golden int8 networks."""
