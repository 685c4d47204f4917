// Package admin serves sipbalancer's operations HTTP API on its own address
// (admin.listen, default 127.0.0.1:9090; "" disables it), apart from SIP:
//
//	GET  /metrics                         Prometheus exposition of the instance's registry
//	GET  /healthz                         the process is alive: 200 "ok"
//	GET  /readyz                          200 when the instance should get traffic, else 503; JSON detail
//	GET  /api/v1/nodes                    every node: state, reason, load, calls, probe, Event Socket
//	GET  /api/v1/nodes/{id}               one node
//	POST /api/v1/nodes/{id}/drain         no new calls; the node's calls go on
//	POST /api/v1/nodes/{id}/disable       no new calls (maintenance)
//	POST /api/v1/nodes/{id}/enable        health decides again
//	POST /api/v1/reload                   re-read the configuration file (as SIGHUP does)
//	GET  /api/v1/calls/{call-id}          which node a call is pinned to, and why
//	GET  /api/v1/log/level                the runtime log level
//	PUT  /api/v1/log/level                change it: {"level": "debug"}
//
// # Readiness
//
// /readyz answers 503 "not_ready" when no SIP listener is bound, when the
// instance drains (SIGTERM), or when no node can take a new call: a load
// balancer in front (keepalived, Kubernetes) should then send carriers
// elsewhere. An unhealthy Redis store makes the status "degraded" but keeps
// 200: new calls still flow (writes queue) and in-dialog requests route by
// their Record-Route token, so moving traffic away would not help — the
// detail and the sipbalancer_store_healthy series say so instead.
//
// # Authorization
//
// Reads (GET) are open: Prometheus scrapes /metrics, probes read /readyz.
// Mutating requests (POST, PUT) need "Authorization: Bearer <admin.token>"
// (admin.token, or SIPBALANCER_ADMIN_TOKEN), compared in constant time. With
// no token configured they are allowed only when the admin server listens
// on a loopback address, where only local users reach it; on any other
// address they are refused with 403 until a token is set. A token, once
// set, is always required, loopback or not.
//
// Errors are JSON, {"error": "..."}, with the status code that fits: 400 for
// a bad request or a rejected configuration, 401/403 for authorization, 404
// for an unknown path, node or Call-ID, 405 (with Allow) for a method an
// endpoint does not take, 409 for a node that was removed from the
// configuration, 503 when the affinity store cannot answer.
//
// Operator states set here (drain, disable) belong to this instance and
// last until enable, a restart, or a reload that changes the node's
// nodes[].drain or Event Socket settings; to make one permanent, or to
// apply it on every instance, set nodes[].drain in the file and reload.
package admin
