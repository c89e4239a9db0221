"""Video model families, one module each: the probe, Hara's ResNets, PyTorchVideo SlowFast/X3D, TimeSformer."""
