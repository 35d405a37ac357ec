"""Local image-to-video on GPU with diffusers' Wan pipeline, served as the `local` adapter."""
