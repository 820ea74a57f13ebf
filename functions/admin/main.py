"""admin: the operator dashboard (`GET /`, no data in it) and its API (`/api/*`, admin-token bearer on every call)."""

import functions_framework
from pydantic import ValidationError
from werkzeug.wrappers import Response

from shared import admin_page, errors
from shared.access import require_operator
from shared.flows import admin as flow
from shared.flows import catalog
from shared.http import Reply, Routes, describe_validation_errors, parse_query, raw_body
from shared.runtime import get_runtime

routes = Routes("admin", openapi="admin")


# --- the page ------------------------------------------------------------------------------------


@routes.get("/")
def page(request):
    return Response(admin_page.index_html(request.script_root), mimetype="text/html", headers=admin_page.HEADERS)


@routes.get("/assets/<name>")
def page_asset(request, name):
    found = admin_page.asset(name)
    if found is None:
        raise errors.NotFound("No such asset.")
    content, content_type = found
    return Response(content, content_type=content_type, headers=admin_page.HEADERS)


# --- jobs ----------------------------------------------------------------------------------------


@routes.get("/api/jobs")
def list_jobs(request):
    db = _operator(request)
    return flow.list_jobs(db, parse_query(request, flow.JobsQuery))


@routes.get("/api/jobs/<job_id>")
def get_job(request, job_id):
    return flow.get_job(_operator(request), flow.job_id_param(job_id))


@routes.post("/api/jobs/<job_id>/retry")
def retry_job(request, job_id):
    return flow.retry_job(_operator(request), flow.job_id_param(job_id))


@routes.post("/api/jobs/rescue-stale")
def rescue_stale(request):
    return flow.rescue_stale(_operator(request))


@routes.get("/api/queue-stats")
def queue_stats(request):
    return flow.queue_stats(_operator(request))


@routes.get("/api/health-report")
def health_report(request):
    return flow.health_report(_operator(request))


# --- metrics -------------------------------------------------------------------------------------


@routes.get("/api/vendors/<vendor_id>/dashboard")
def vendor_dashboard(request, vendor_id):
    db = _operator(request)
    vendor = flow.uuid_param("vendor_id", vendor_id)
    try:
        from shared.flows.metrics import vendor_dashboard as dashboard
    except ImportError:
        raise errors.NotImplementedYet("Vendor metrics are not available yet.") from None
    return dashboard(db, vendor)


@routes.get("/api/vendors/<vendor_id>/daily")
def vendor_daily(request, vendor_id):
    db = _operator(request)
    vendor = flow.uuid_param("vendor_id", vendor_id)
    query = parse_query(request, flow.DaysQuery)
    return flow.vendor_daily(db, vendor, days=query.days, timezone=get_runtime().settings.metrics_timezone)


@routes.get("/api/platform/daily")
def platform_daily(request):
    db = _operator(request)
    query = parse_query(request, flow.DaysQuery)
    try:
        from shared.flows.metrics import platform_daily as daily
    except ImportError:
        raise errors.NotImplementedYet("Platform metrics are not available yet.") from None
    return daily(db, days=query.days)


# --- catalog and orders --------------------------------------------------------------------------


@routes.get("/api/vendors")
def list_vendors(request):
    db = _operator(request)
    return flow.list_vendors(db, parse_query(request, flow.VendorsQuery))


@routes.post("/api/vendors")
def create_vendor(request):
    db = _operator(request)
    return Reply(catalog.create_vendor(db, _body(request, catalog.VendorIn)), 201)


@routes.get("/api/products")
def list_products(request):
    db = _operator(request)
    return flow.list_products(db, parse_query(request, flow.ProductsQuery))


@routes.post("/api/products")
def create_product(request):
    db = _operator(request)
    return Reply(catalog.create_product(db, _body(request, catalog.ProductIn)), 201)


@routes.get("/api/products/<product_id>")
def get_product(request, product_id):
    db = _operator(request)
    return catalog.get_product(db, flow.uuid_param("product_id", product_id))


@routes.put("/api/products/<product_id>/stock")
def set_stock(request, product_id):
    db = _operator(request)
    product = flow.uuid_param("product_id", product_id)
    return catalog.set_stock(db, product, _body(request, catalog.StockIn))


@routes.get("/api/orders/<order_id>")
def get_order(request, order_id):
    return flow.get_order(_operator(request), flow.uuid_param("order_id", order_id))


# --- helpers -------------------------------------------------------------------------------------


def _operator(request):
    """The database, once the caller has shown the admin token (401 otherwise)."""
    runtime = get_runtime()
    require_operator(request, runtime)
    return runtime.db


def _body(request, model):
    """The body validated as JSON (so UUIDs arrive as strings and integers stay strictly integers)."""
    try:
        return model.model_validate_json(raw_body(request) or b"null")
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False)
        if any(p["type"] == "json_invalid" for p in problems) or (problems[0]["type"] == "model_type"
                                                                  and not problems[0]["loc"]):
            raise errors.InvalidJson() from None
        raise errors.ValidationFailed(details={"fields": describe_validation_errors(exc)}) from None


@functions_framework.http
def admin(request):
    return routes.handle(request)
