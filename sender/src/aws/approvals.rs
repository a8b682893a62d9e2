//! The two-person arm in AWS mode: who an operator is comes from AWS (STS
//! `GetCallerIdentity`), so two people means two principals, and approvals
//! are kept with the fire in S3, where every machine arming or approving
//! the same fire finds them.
//!
//! Layout: `fires/<fire>/approvals/<action>/<campaign hash>/<user id>.json`,
//! one object per principal (approving again renews it). The object is
//! named by the caller's `aws:userid`, so an IAM policy can let operators
//! write approvals only as themselves: allow `s3:PutObject` on
//! `arn:aws:s3:::BUCKET/PREFIX/fires/*/approvals/*/*/${aws:userid}.json`
//! and keep other grants on the prefix off `fires/*/approvals/`. A reader
//! ignores an object whose body names another principal than its name.

use std::sync::Mutex;

use futures_util::future::BoxFuture;

use super::store::Store;
use super::{Aws, AwsError};
use crate::runbook::approvals::{Approval, ApprovalError, ApprovalKey, Approvals};

/// The caller, as STS answers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Caller {
    /// The principal's ARN: the identity approvals count.
    arn: String,
    /// Its unique id (`AIDA...`, or `AROA...:session`): the object's name.
    user_id: String,
}

/// An approval as stored: the approval and the principal's id.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Stored {
    #[serde(flatten)]
    approval: Approval,
    user_id: String,
}

/// Approvals in S3, with the caller's AWS principal as the identity.
#[derive(Debug)]
pub struct S3Approvals {
    store: Store,
    sts: aws_sdk_sts::Client,
    caller: Mutex<Option<Caller>>,
}

fn aws(e: AwsError) -> ApprovalError {
    ApprovalError::Aws(e.to_string())
}

/// The object of `key` for the principal `user_id`, relative to the store.
fn object(key: &ApprovalKey, user_id: &str) -> String {
    format!("{}{}.json", folder(key), user_id)
}

fn folder(key: &ApprovalKey) -> String {
    format!("fires/{}/approvals/{}/{}/", key.fire_key, key.action, key.campaign_hash)
}

impl S3Approvals {
    /// Approvals in the bucket and prefix of `aws`, as its caller.
    pub fn new(aws: &Aws) -> Self {
        Self { store: aws.store(), sts: aws.sts.clone(), caller: Mutex::new(None) }
    }

    /// Who this process acts as (asked once).
    async fn caller(&self) -> Result<Caller, ApprovalError> {
        if let Some(c) = self.caller.lock().expect("caller lock").clone() {
            return Ok(c);
        }
        let out = self.sts.get_caller_identity().send().await.map_err(|e| aws(AwsError::call("STS", "GetCallerIdentity", e)))?;
        let (Some(arn), Some(user_id)) = (out.arn(), out.user_id()) else {
            return Err(ApprovalError::Aws("STS GetCallerIdentity answered without an ARN or user id".into()));
        };
        if user_id.is_empty() || user_id.contains('/') {
            return Err(ApprovalError::Aws(format!("STS GetCallerIdentity: an unusable user id {user_id:?}")));
        }
        let c = Caller { arn: arn.to_owned(), user_id: user_id.to_owned() };
        *self.caller.lock().expect("caller lock") = Some(c.clone());
        Ok(c)
    }
}

impl Approvals for S3Approvals {
    fn identity<'a>(&'a self, _operator: &'a str) -> BoxFuture<'a, Result<String, ApprovalError>> {
        Box::pin(async move { Ok(self.caller().await?.arn) })
    }

    fn approve<'a>(&'a self, key: &'a ApprovalKey, approval: &'a Approval) -> BoxFuture<'a, Result<(), ApprovalError>> {
        Box::pin(async move {
            let me = self.caller().await?;
            if approval.identity != me.arn {
                return Err(ApprovalError::Aws(format!("{} cannot approve as {}", me.arn, approval.identity)));
            }
            let body = serde_json::to_vec(&Stored { approval: approval.clone(), user_id: me.user_id.clone() }).expect("serializes");
            self.store.put(&object(key, &me.user_id), body).await.map_err(aws)
        })
    }

    fn list<'a>(&'a self, key: &'a ApprovalKey) -> BoxFuture<'a, Result<Vec<Approval>, ApprovalError>> {
        Box::pin(async move {
            let folder = folder(key);
            let mut out = Vec::new();
            for name in self.store.list(&folder).await.map_err(aws)? {
                let Some(user_id) = name.strip_suffix(".json") else { continue };
                let Some(s) = self.store.get_json::<Stored>(&format!("{folder}{name}")).await.map_err(aws)? else { continue };
                if s.user_id != user_id || s.approval.campaign_hash != key.campaign_hash {
                    tracing::warn!("{}: an approval written for another principal or campaign; not counted", self.store.url(&folder));
                    continue;
                }
                out.push(s.approval);
            }
            out.sort_by_key(|a| std::cmp::Reverse(a.at_ms));
            Ok(out)
        })
    }
}
