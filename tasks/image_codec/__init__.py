"""Learned image compression task: rate-distortion training of the registered codecs and
evaluation from the real byte stream (bpp, PSNR, MS-SSIM) against JPEG and WebP."""
