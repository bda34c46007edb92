"""VAE task: distilling fast decoders (and encoders) for a teacher VAE's latent space from
diffusers' autoencoders, and evaluating autoencoders / distilled decoders (PSNR, SSIM, LPIPS,
decode time) on image folders and video frames."""
