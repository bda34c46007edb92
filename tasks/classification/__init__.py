"""Image classification task: ImageFolder / CIFAR data with the timm pipeline, training, top-1 / top-5 eval,
MobileTL fine-tuning."""
