//! The tower layers on a real tonic gRPC server on loopback, called by a real tonic client
//! over HTTP/2: `Controller/<package.Service>/<Method>` names, Middleware > Controller > user
//! spans, the peer address from tonic's `TcpConnectInfo`, concurrent calls on one channel,
//! and gRPC error statuses (server errors tagged `error`, client errors not).
//!
//! The service is written by hand with tonic's codec API (a UTF-8 string codec): no protoc,
//! no prost, no build script.

mod support;

use bytes::{Buf, BufMut};
use scout_std::integrations::tower::{ControllerLayer, ScoutLayer};
use serde_json::json;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use support::*;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TcpIncoming};
use tonic::transport::{Channel, Server};
use tonic::{Code, Status};

/// Messages are UTF-8 strings, sent as they are.
#[derive(Debug, Clone, Copy, Default)]
struct StrCodec;

impl Encoder for StrCodec {
    type Item = String;
    type Error = Status;
    fn encode(&mut self, item: String, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(item.as_bytes());
        Ok(())
    }
}

impl Decoder for StrCodec {
    type Item = String;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<String>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| Status::invalid_argument("not UTF-8"))
    }
}

impl Codec for StrCodec {
    type Encode = String;
    type Decode = String;
    type Encoder = Self;
    type Decoder = Self;
    fn encoder(&mut self) -> Self {
        *self
    }
    fn decoder(&mut self) -> Self {
        *self
    }
}

/// `helloworld.Greeter`: `SayHello` answers `hello <name>` (after a `Custom/Greet` span and
/// an await), `Fail` returns INTERNAL and `Lookup` NOT_FOUND.
#[derive(Debug, Clone, Copy)]
struct Greeter;

impl NamedService for Greeter {
    const NAME: &'static str = "helloworld.Greeter";
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

async fn say_hello(req: tonic::Request<String>) -> Result<tonic::Response<String>, Status> {
    let name = req.into_inner();
    {
        let _s = scout_std::instrument("Greet");
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok(tonic::Response::new(format!("hello {name}")))
}

async fn fail(_: tonic::Request<String>) -> Result<tonic::Response<String>, Status> {
    Err(Status::internal("greeter broke"))
}

async fn lookup(_: tonic::Request<String>) -> Result<tonic::Response<String>, Status> {
    Err(Status::not_found("no such greeting"))
}

impl tower::Service<http::Request<tonic::body::Body>> for Greeter {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(StrCodec);
            let res = match req.uri().path() {
                "/helloworld.Greeter/SayHello" => {
                    grpc.unary(tower::service_fn(say_hello), req).await
                }
                "/helloworld.Greeter/Fail" => grpc.unary(tower::service_fn(fail), req).await,
                "/helloworld.Greeter/Lookup" => grpc.unary(tower::service_fn(lookup), req).await,
                _ => Status::unimplemented("no such method").into_http(),
            };
            Ok(res)
        })
    }
}

fn tonic_peer_ip(ext: &http::Extensions) -> Option<IpAddr> {
    ext.get::<TcpConnectInfo>()?.remote_addr().map(|a| a.ip())
}

async fn call(
    channel: &Channel,
    method: &'static str,
    msg: &str,
) -> Result<tonic::Response<String>, Status> {
    let mut client = tonic::client::Grpc::new(channel.clone());
    client.ready().await.expect("channel ready");
    let path = http::uri::PathAndQuery::from_static(method);
    client
        .unary(tonic::Request::new(msg.to_owned()), path, StrCodec)
        .await
}

fn controllers(reqs: &[scout_std::local_agent::FinishedRequest], op: &str) -> usize {
    reqs.iter()
        .filter(|r| r.operation.as_deref() == Some(op))
        .count()
}

#[test]
fn tonic_server_names_hierarchy_tags_and_grpc_errors() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = support::runtime(2);
    rt.block_on(async {
        let (agent, _guard) = start(&[]).await;
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap();
        tokio::spawn(async move {
            Server::builder()
                .layer(ScoutLayer::new().peer_ip(tonic_peer_ip))
                .layer(ControllerLayer::new())
                .add_service(Greeter)
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("client connects");

        let hello = call(&channel, "/helloworld.Greeter/SayHello", "ada").await;
        assert_eq!(hello.unwrap().into_inner(), "hello ada");
        // 20 concurrent calls multiplexed on the one HTTP/2 connection.
        let calls = (0..20).map(|i| {
            let channel = channel.clone();
            tokio::spawn(async move {
                let name = format!("n{i}");
                let r = call(&channel, "/helloworld.Greeter/SayHello", &name).await;
                assert_eq!(r.unwrap().into_inner(), format!("hello {name}"));
            })
        });
        for c in calls.collect::<Vec<_>>() {
            c.await.unwrap();
        }
        let internal = call(&channel, "/helloworld.Greeter/Fail", "x")
            .await
            .unwrap_err();
        assert_eq!(internal.code(), Code::Internal);
        let not_found = call(&channel, "/helloworld.Greeter/Lookup", "x")
            .await
            .unwrap_err();
        assert_eq!(not_found.code(), Code::NotFound);
        // No such method: tonic's router answers UNIMPLEMENTED (also named by its path).
        let unknown = call(&channel, "/helloworld.Greeter/Nope", "x")
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::Unimplemented);

        let reqs = collect(&agent, 24).await;
        assert_eq!(reqs.len(), 24, "one request per call: {reqs:#?}");
        let hello_op = "Controller/helloworld.Greeter/SayHello";
        assert_eq!(controllers(&reqs, hello_op), 21);

        let mut ids = std::collections::HashSet::new();
        for r in reqs
            .iter()
            .filter(|r| r.operation.as_deref() == Some(hello_op))
        {
            assert!(ids.insert(r.id.clone()), "distinct requests");
            assert!(!r.error);
            assert_eq!(
                serde_json::Value::Object(tags(r)),
                json!({"path": "/helloworld.Greeter/SayHello", "user_ip": "127.0.0.1"}),
                "{r:#?}"
            );
            assert_parent(r, "Middleware", None);
            assert_parent(r, hello_op, Some("Middleware"));
            assert_parent(r, "Custom/Greet", Some(hello_op));
            assert_eq!(r.spans.len(), 3, "no span of another call: {r:#?}");
            let took = span(r, hello_op).duration_us;
            assert!(took >= 5_000, "the handler's await is inside: {took} us");
        }

        // gRPC answers errors with HTTP 200 and a `grpc-status`: the server-side codes
        // (INTERNAL, UNIMPLEMENTED) are tagged `error`, the client-side ones (NOT_FOUND) not.
        for (method, error) in [("Fail", true), ("Nope", true), ("Lookup", false)] {
            let op = format!("Controller/helloworld.Greeter/{method}");
            assert_eq!(controllers(&reqs, &op), 1, "{op}");
            let r = reqs.iter().find(|r| r.operation.as_deref() == Some(&*op));
            let r = r.unwrap();
            let mut expect = json!({
                "path": format!("/helloworld.Greeter/{method}"),
                "user_ip": "127.0.0.1",
            });
            if error {
                expect["error"] = json!("true");
            }
            assert_eq!(serde_json::Value::Object(tags(r)), expect, "{r:#?}");
            assert_eq!(r.error, error, "{op}");
            assert_parent(r, &op, Some("Middleware"));
        }

        scout_std::shutdown();
        agent.shutdown().await;
    });
}
