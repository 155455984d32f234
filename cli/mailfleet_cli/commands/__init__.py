"""One module per command group, named as the API's sections are."""
