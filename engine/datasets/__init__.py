"""Datasets: manifests, public annotation formats (UCF101, UCF101-24, Kinetics), the synthetic benchmark."""
