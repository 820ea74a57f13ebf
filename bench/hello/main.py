"""The bare hello-world function the intake benchmark compares webhook_intake with (same server, same load)."""

import functions_framework


@functions_framework.http
def hello(request):
    return "Hello, World!"
