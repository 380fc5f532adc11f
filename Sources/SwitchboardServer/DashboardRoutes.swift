import Hummingbird
import ServiceLifecycle
import SwitchboardCore

/// `GET /dashboard`: the live cluster page (embedded, no CDN, no build step; it asks
/// for the API key and keeps it in the browser's session storage), and
/// `GET /api/dashboard[?since=<Unix ms>]`: its data — the whole cluster from the nodes'
/// heartbeats (`ClusterMonitor`), only with `Authorization: Bearer <API key>` (it shows
/// room names and nicknames): 401 otherwise.
struct DashboardRoutes {
    let monitor: ClusterMonitor
    let api: APIRoutes

    func register(on router: Router<SwitchboardRequestContext>) {
        let page = ByteBuffer(bytes: PackageResources.dashboard_html)
        router.get("/dashboard") { _, _ in
            Response(
                status: .ok,
                headers: [
                    .contentType: "text/html; charset=utf-8",
                    .contentSecurityPolicy: "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
                    .xContentTypeOptions: "nosniff",
                    .cacheControl: "no-cache",
                ],
                body: ResponseBody(byteBuffer: page))
        }
        router.get("/api/dashboard") { request, _ in
            try api.requireAPIKey(request)
            var since: Int64?
            if let raw = request.uri.queryParameters["since"] {
                guard let value = Int64(String(raw)), value >= 0 else {
                    throw APIError(.badRequest, "invalid_since", "since is Unix milliseconds")
                }
                since = value
            }
            return Response.json(await monitor.snapshot(since: since).jsonBytes)
        }
    }
}

/// Samples the cluster for the dashboard for the life of the server.
struct ClusterMonitorRunner: Service {
    let monitor: ClusterMonitor
    func run() async throws {
        await cancelWhenGracefulShutdown { await monitor.run() }
    }
}
