"""An outside Flower app that embeds flsec-flower's Krum and sign-flip attack."""
