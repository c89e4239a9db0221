"""Models: spec resolution and loading, the zoo, backends (eager, TensorRT), forward-pass counting."""
