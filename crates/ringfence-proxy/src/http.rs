//! HTTP/1.1 proxying: CONNECT tunnels and absolute-form `http://` requests.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::proxy::Proxy;

pub(crate) async fn serve(_proxy: &Arc<Proxy>, _stream: TcpStream, _peer: SocketAddr) {}
