"""Getting pixels in: decoding video files and frame directories, preprocessing to model input, optical flow."""
