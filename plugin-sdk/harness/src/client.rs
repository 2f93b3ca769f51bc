//! Builders for the requests a plugin receives.

use crate::{AuthRequest, ClientInfo, Message, ProtocolVersion, Qos, Session};

/// Starts describing a client: `client("c1").username("alice").password("pw").auth_request()`.
pub fn client(client_id: &str) -> ClientBuilder {
    ClientBuilder {
        info: ClientInfo {
            client_id: client_id.to_owned(),
            username: None,
            listener: "default".to_owned(),
            peer_address: "127.0.0.1:50000".to_owned(),
            protocol: ProtocolVersion::V5,
            tls_identity: None,
        },
        password: None,
        auth_method: None,
        auth_data: None,
        reauthentication: false,
    }
}

/// A QoS 0, non-retained message without properties.
pub fn message(topic: &str, payload: impl Into<Vec<u8>>) -> Message {
    Message {
        topic: topic.to_owned(),
        payload: payload.into(),
        qos: Qos::AtMostOnce,
        retain: false,
        user_properties: Vec::new(),
        content_type: None,
    }
}

/// A client being described; see [`client`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientBuilder {
    info: ClientInfo,
    password: Option<Vec<u8>>,
    auth_method: Option<String>,
    auth_data: Option<Vec<u8>>,
    reauthentication: bool,
}

impl ClientBuilder {
    pub fn username(mut self, username: &str) -> Self {
        self.info.username = Some(username.to_owned());
        self
    }

    pub fn password(mut self, password: impl AsRef<[u8]>) -> Self {
        self.password = Some(password.as_ref().to_vec());
        self
    }

    pub fn listener(mut self, listener: &str) -> Self {
        self.info.listener = listener.to_owned();
        self
    }

    pub fn peer_address(mut self, address: &str) -> Self {
        self.info.peer_address = address.to_owned();
        self
    }

    pub fn protocol(mut self, protocol: ProtocolVersion) -> Self {
        self.info.protocol = protocol;
        self
    }

    pub fn tls_identity(mut self, identity: &str) -> Self {
        self.info.tls_identity = Some(identity.to_owned());
        self
    }

    /// MQTT 5 enhanced authentication: method and (optional) data.
    pub fn auth(mut self, method: &str, data: Option<&[u8]>) -> Self {
        self.auth_method = Some(method.to_owned());
        self.auth_data = data.map(<[u8]>::to_vec);
        self
    }

    pub fn reauthentication(mut self, reauthentication: bool) -> Self {
        self.reauthentication = reauthentication;
        self
    }

    pub fn info(&self) -> ClientInfo {
        self.info.clone()
    }

    pub fn auth_request(self) -> AuthRequest {
        AuthRequest {
            client: self.info,
            password: self.password,
            auth_method: self.auth_method,
            auth_data: self.auth_data,
            reauthentication: self.reauthentication,
        }
    }

    /// The client's session with these attributes (as an authenticator would have attached them).
    pub fn session(self, attributes: &[(&str, &str)]) -> Session {
        Session {
            client: self.info,
            attributes: attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }
}
