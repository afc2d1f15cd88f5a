//! Who may read a path: the caller's bearer token goes to the API server, which says who it is (TokenReview) and
//! whether that identity may `get` the path (SubjectAccessReview on a non-resource URL, the rule a ClusterRole grants
//! with `nonResourceURLs`). Verdicts are kept for [`VERDICT_TTL`] (a scraper comes back every few seconds with the
//! same token); at most [`MAX_REVIEWS`] tokens are reviewed at once, so callers with made-up tokens can't turn one
//! server into a flood of reviews.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use tokio::sync::Semaphore;

/// How long a verdict is kept.
pub const VERDICT_TTL: Duration = Duration::from_secs(60);
/// Verdicts kept at most; past it the expired ones go, and if none has, all.
pub const MAX_VERDICTS: usize = 256;
/// Tokens reviewed at once; more wait up to [`REVIEW_WAIT`].
pub const MAX_REVIEWS: usize = 4;
/// How long a request waits for a turn to be reviewed, and for the API server's two answers.
pub const REVIEW_WAIT: Duration = Duration::from_secs(5);

/// What the API server said of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated and allowed to `get` the path.
    Allowed,
    /// No token, or one the API server does not authenticate (HTTP 401).
    Unauthenticated,
    /// Authenticated, not allowed (HTTP 403).
    Forbidden,
}

/// Why no verdict could be had (HTTP 503: the caller may come back).
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("the API server did not review the token: {0}")]
    Api(#[from] kube::Error),
    #[error("the API server did not review the token within {0:?}")]
    Timeout(Duration),
}

/// The token from an `Authorization: Bearer <token>` header value (the scheme in any case), if it is one.
pub fn bearer_token(header: Option<&http::HeaderValue>) -> Option<&str> {
    let value = header?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Reviews tokens for one path.
pub struct Access {
    client: kube::Client,
    path: String,
    verdicts: Mutex<HashMap<String, (Instant, Verdict)>>,
    reviews: Semaphore,
}

impl Access {
    /// Reviews with `client` (whose identity needs `create` on tokenreviews and subjectaccessreviews) whether a
    /// token may `get` `path`.
    pub fn new(client: kube::Client, path: &str) -> Self {
        Self {
            client,
            path: path.to_owned(),
            verdicts: Mutex::new(HashMap::new()),
            reviews: Semaphore::new(MAX_REVIEWS),
        }
    }

    /// The verdict on `token` (`None`: no token was sent).
    pub async fn verdict(&self, token: Option<&str>) -> Result<Verdict, AccessError> {
        let Some(token) = token else {
            return Ok(Verdict::Unauthenticated);
        };
        if let Some(verdict) = self.kept(token) {
            return Ok(verdict);
        }
        let review = async {
            let _turn = self.reviews.acquire().await;
            if let Some(verdict) = self.kept(token) {
                return Ok(verdict);
            }
            self.review(token).await
        };
        let verdict = tokio::time::timeout(REVIEW_WAIT, review)
            .await
            .map_err(|_| AccessError::Timeout(REVIEW_WAIT))??;
        self.keep(token, verdict);
        Ok(verdict)
    }

    fn kept(&self, token: &str) -> Option<Verdict> {
        let verdicts = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        verdicts
            .get(token)
            .filter(|(at, _)| at.elapsed() < VERDICT_TTL)
            .map(|(_, v)| *v)
    }

    fn keep(&self, token: &str, verdict: Verdict) {
        let mut verdicts = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        if verdicts.len() >= MAX_VERDICTS {
            verdicts.retain(|_, (at, _)| at.elapsed() < VERDICT_TTL);
            if verdicts.len() >= MAX_VERDICTS {
                verdicts.clear();
            }
        }
        verdicts.insert(token.to_owned(), (Instant::now(), verdict));
    }

    async fn review(&self, token: &str) -> Result<Verdict, AccessError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: None,
            },
            ..Default::default()
        };
        let review = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let status = review.status.unwrap_or_default();
        let Some(user) = status.user.filter(|_| status.authenticated == Some(true)) else {
            return Ok(Verdict::Unauthenticated);
        };
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(self.path.clone()),
                    verb: Some("get".to_owned()),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let access = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await?;
        Ok(if access.status.is_some_and(|s| s.allowed) {
            Verdict::Allowed
        } else {
            Verdict::Forbidden
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn only_a_bearer_header_gives_a_token() {
        let token =
            |v: &str| bearer_token(Some(&HeaderValue::from_str(v).unwrap())).map(str::to_owned);
        assert_eq!(token("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(token("bearer  abc ").as_deref(), Some("abc"));
        assert_eq!(token("Basic abc"), None);
        assert_eq!(token("Bearer "), None);
        assert_eq!(token("Bearer"), None);
        assert_eq!(bearer_token(None), None);
        let not_text = HeaderValue::from_bytes(b"Bearer \xff").unwrap();
        assert_eq!(bearer_token(Some(&not_text)), None);
    }
}
