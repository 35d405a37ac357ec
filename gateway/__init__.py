"""i2v-gateway: one HTTP API over every image-to-video backend."""
