//! [`Chain`]: the plugins of a listener in configuration order. For each hook the chain asks, in order,
//! the plugins that export and declared it (and, for publish-time hooks, whose `publish-filters` match
//! the topic); the first allow or deny wins, `defer` asks the next one. When every plugin defers (or none
//! implements the hook) the verdict is `defer` with [`Source::Default`]: the listener's default applies.
//!
//! A failed call (trap, deadline, out of memory, invalid answer) follows the failing plugin's
//! [`FailurePolicy`](crate::FailurePolicy): `deny` answers reason code 0x80 (unspecified error), `allow`
//! allows (no attributes; the requested QoS), `defer` asks the next plugin; transformers `pass` the
//! message on unchanged by them, or `drop` it with 0x80.
//!
//! Transformers compose: each one sees the message as patched by those before it.

use crate::bindings::wasp::plugin::types::{
    AuthRequest, AuthVerdict, AuthzVerdict, Decision, Denial, Message, MessagePatch, Qos, Session,
    SubscribeDecision, SubscribeVerdict, TransformVerdict,
};
use crate::config::{OnAccessFailure, OnTransformFailure};
use crate::error::CallError;
use crate::plugin::{Hook, Plugin};

/// Reason code of a verdict made by a failure policy: 0x80, unspecified error.
pub const FAILURE_REASON_CODE: u8 = 0x80;

/// Who made a chain's verdict.
#[derive(Debug, Clone)]
pub enum Source {
    /// This plugin answered.
    Plugin(Plugin),
    /// This plugin's call failed and its failure policy answered.
    Failure(Plugin, CallError),
    /// No plugin decided: every one deferred, or none implements the hook.
    Default,
}

impl Source {
    /// The plugin that decided, if any.
    pub fn plugin(&self) -> Option<&Plugin> {
        match self {
            Source::Plugin(plugin) | Source::Failure(plugin, _) => Some(plugin),
            Source::Default => None,
        }
    }
    /// The name of the plugin that decided, or "" when no plugin did.
    pub fn plugin_name(&self) -> &str {
        self.plugin().map_or("", |p| p.name())
    }
}

/// A chain's verdict and who made it.
#[derive(Debug, Clone)]
pub struct Decided<V> {
    pub verdict: V,
    pub source: Source,
}

/// The outcome of the transformers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transformed {
    /// No plugin changed the message.
    Unchanged,
    /// The message after every patch, applied in chain order.
    Modified(Message),
    /// A plugin dropped the message (or failed with policy `drop`): MQTT 5 publishers get this reason code.
    Dropped { reason_code: u8, plugin: String },
}

fn failure_denial() -> Denial {
    Denial {
        reason_code: FAILURE_REASON_CODE,
        reason: None,
    }
}

/// Plugins in configuration order. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    plugins: Vec<Plugin>,
}

impl Chain {
    pub fn new(plugins: Vec<Plugin>) -> Self {
        Self { plugins }
    }

    pub fn plugins(&self) -> &[Plugin] {
        &self.plugins
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// Whether any plugin would be asked for this hook (and topic, for publish-time hooks).
    pub fn wants(&self, hook: Hook, topic: Option<&str>) -> bool {
        self.plugins
            .iter()
            .any(|p| p.implements(hook) && topic.is_none_or(|t| p.wants_topic(t)))
    }

    /// Authenticates a CONNECT. A `continue` verdict names its plugin in `source`: call
    /// [`Chain::resume_authenticate`] with it when the client answers with AUTH.
    pub async fn authenticate(&self, request: &AuthRequest) -> Decided<AuthVerdict> {
        self.authenticate_from(0, request).await
    }

    /// Continues MQTT 5 enhanced authentication with the plugin that answered `continue`; if that
    /// plugin then defers, the plugins after it are asked. A plugin not in the chain is called alone.
    pub async fn resume_authenticate(
        &self,
        plugin: &Plugin,
        request: &AuthRequest,
    ) -> Decided<AuthVerdict> {
        match self.plugins.iter().position(|p| p.same(plugin)) {
            Some(index) => self.authenticate_from(index, request).await,
            None => {
                Chain::new(vec![plugin.clone()])
                    .authenticate_from(0, request)
                    .await
            }
        }
    }

    async fn authenticate_from(&self, start: usize, request: &AuthRequest) -> Decided<AuthVerdict> {
        for plugin in self.plugins[start.min(self.plugins.len())..]
            .iter()
            .filter(|p| p.implements(Hook::Authenticate))
        {
            match plugin.authenticate(request).await {
                Ok(AuthVerdict::Defer) => continue,
                Ok(verdict) => {
                    return Decided {
                        verdict,
                        source: Source::Plugin(plugin.clone()),
                    };
                }
                Err(error) => {
                    let verdict = match plugin.failure_policy().authenticate {
                        OnAccessFailure::Defer => continue,
                        OnAccessFailure::Deny => AuthVerdict::Deny(failure_denial()),
                        OnAccessFailure::Allow => AuthVerdict::Allow(Vec::new()),
                    };
                    return Decided {
                        verdict,
                        source: Source::Failure(plugin.clone(), error),
                    };
                }
            }
        }
        Decided {
            verdict: AuthVerdict::Defer,
            source: Source::Default,
        }
    }

    /// Authorizes a PUBLISH to `topic`.
    pub async fn authorize_publish(
        &self,
        session: &Session,
        topic: &str,
        qos: Qos,
        retain: bool,
    ) -> Decided<AuthzVerdict> {
        let asked = self
            .plugins
            .iter()
            .filter(|p| p.implements(Hook::AuthorizePublish) && p.wants_topic(topic));
        for plugin in asked {
            match plugin.authorize_publish(session, topic, qos, retain).await {
                Ok(AuthzVerdict {
                    decision: Decision::Defer,
                    ..
                }) => continue,
                Ok(verdict) => {
                    return Decided {
                        verdict,
                        source: Source::Plugin(plugin.clone()),
                    };
                }
                Err(error) => {
                    let decision = match plugin.failure_policy().authorize {
                        OnAccessFailure::Defer => continue,
                        OnAccessFailure::Deny => Decision::Deny(failure_denial()),
                        OnAccessFailure::Allow => Decision::Allow,
                    };
                    let verdict = AuthzVerdict {
                        decision,
                        cache_seconds: None,
                    };
                    return Decided {
                        verdict,
                        source: Source::Failure(plugin.clone(), error),
                    };
                }
            }
        }
        Decided {
            verdict: AuthzVerdict {
                decision: Decision::Defer,
                cache_seconds: None,
            },
            source: Source::Default,
        }
    }

    /// Authorizes one SUBSCRIBE filter at the requested QoS.
    pub async fn authorize_subscribe(
        &self,
        session: &Session,
        filter: &str,
        qos: Qos,
    ) -> Decided<SubscribeVerdict> {
        for plugin in self
            .plugins
            .iter()
            .filter(|p| p.implements(Hook::AuthorizeSubscribe))
        {
            match plugin.authorize_subscribe(session, filter, qos).await {
                Ok(SubscribeVerdict {
                    decision: SubscribeDecision::Defer,
                    ..
                }) => continue,
                Ok(verdict) => {
                    return Decided {
                        verdict,
                        source: Source::Plugin(plugin.clone()),
                    };
                }
                Err(error) => {
                    let decision = match plugin.failure_policy().authorize {
                        OnAccessFailure::Defer => continue,
                        OnAccessFailure::Deny => SubscribeDecision::Deny(failure_denial()),
                        OnAccessFailure::Allow => SubscribeDecision::Allow(qos),
                    };
                    let verdict = SubscribeVerdict {
                        decision,
                        cache_seconds: None,
                    };
                    return Decided {
                        verdict,
                        source: Source::Failure(plugin.clone(), error),
                    };
                }
            }
        }
        Decided {
            verdict: SubscribeVerdict {
                decision: SubscribeDecision::Defer,
                cache_seconds: None,
            },
            source: Source::Default,
        }
    }

    /// Runs the transformers on an inbound PUBLISH.
    pub async fn transform(&self, session: &Session, message: &Message) -> Transformed {
        let mut current: Option<Message> = None;
        for plugin in self
            .plugins
            .iter()
            .filter(|p| p.implements(Hook::Transform))
        {
            let seen = current.as_ref().unwrap_or(message);
            if !plugin.wants_topic(&seen.topic) {
                continue;
            }
            match plugin.transform(session, seen).await {
                Ok(TransformVerdict::Pass) => {}
                Ok(TransformVerdict::Drop(reason_code)) => {
                    return Transformed::Dropped {
                        reason_code,
                        plugin: plugin.name().to_owned(),
                    };
                }
                Ok(TransformVerdict::Modify(patch)) => {
                    let mut next = current.take().unwrap_or_else(|| message.clone());
                    apply_patch(&mut next, patch);
                    current = Some(next);
                }
                Err(_) => match plugin.failure_policy().transform {
                    OnTransformFailure::Pass => {}
                    OnTransformFailure::Drop => {
                        return Transformed::Dropped {
                            reason_code: FAILURE_REASON_CODE,
                            plugin: plugin.name().to_owned(),
                        };
                    }
                },
            }
        }
        match current {
            Some(message) => Transformed::Modified(message),
            None => Transformed::Unchanged,
        }
    }
}

/// Applies a (validated) patch: every field left `none` stays as it was.
pub fn apply_patch(message: &mut Message, patch: MessagePatch) {
    let MessagePatch {
        topic,
        payload,
        qos,
        retain,
        user_properties,
    } = patch;
    if let Some(topic) = topic {
        message.topic = topic;
    }
    if let Some(payload) = payload {
        message.payload = payload;
    }
    if let Some(qos) = qos {
        message.qos = qos;
    }
    if let Some(retain) = retain {
        message.retain = retain;
    }
    if let Some(user_properties) = user_properties {
        message.user_properties = user_properties;
    }
}
