"""What every flavour renders the same way, one module per artifact kind; a flavour
(colospec/flavors/) puts the pieces together in its own layout."""
