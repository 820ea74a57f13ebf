"""checkout: not built yet (see the open issues); answers 501 in the error envelope."""

import functions_framework

from shared.errors import NotImplementedYet
from shared.http import Routes

routes = Routes("checkout")


@routes.route("GET", "/<path:rest>")
@routes.route("GET", "/")
def not_built(request, rest=""):
    raise NotImplementedYet()


@functions_framework.http
def checkout(request):
    return routes.handle(request)
