"""mmlib: helpers behind the notebooks of the multimodal Flickr8k study reproduction."""
__version__ = "0.1.0"
