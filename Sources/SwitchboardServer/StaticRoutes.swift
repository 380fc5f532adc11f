import Hummingbird

/// The chat page at `/`, embedded in the binary.
struct StaticRoutes {
    func register(on router: Router<SwitchboardRequestContext>) {
        let page = ByteBuffer(bytes: PackageResources.index_html)
        router.get("/") { _, _ in
            Response(
                status: .ok,
                headers: [
                    .contentType: "text/html; charset=utf-8",
                    .contentSecurityPolicy: "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self' ws: wss:",
                    .xContentTypeOptions: "nosniff",
                ],
                body: ResponseBody(byteBuffer: page))
        }
        router.get("/switchboard.mjs") { _, _ in
            // ES module form: `import Switchboard from "/switchboard.mjs"`.
            Response(
                status: .ok,
                headers: [
                    .contentType: "application/javascript; charset=utf-8", .cacheControl: "no-cache",
                    .xContentTypeOptions: "nosniff", .accessControlAllowOrigin: "*",
                ],
                body: ResponseBody(
                    byteBuffer: ByteBuffer(string: "import './switchboard.js';\nexport default globalThis.Switchboard;\nexport const Switchboard = globalThis.Switchboard;\n")))
        }
        let library = ByteBuffer(bytes: PackageResources.switchboard_js)
        router.get("/switchboard.js") { _, _ in
            Response(
                status: .ok,
                headers: [
                    .contentType: "application/javascript; charset=utf-8",
                    .cacheControl: "no-cache",
                    .xContentTypeOptions: "nosniff",
                    .accessControlAllowOrigin: "*",
                ],
                body: ResponseBody(byteBuffer: library))
        }
    }
}
