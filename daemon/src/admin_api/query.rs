//! Query-string parameters of list endpoints, refused by name when unknown or malformed.

use gateway_shared::api::{PAGE_DEFAULT, PAGE_MAX};
use gateway_shared::validate::FieldError;

use crate::error::GatewayError;

pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parses the query and refuses parameters not in `allowed`.
    pub fn parse(uri: &http::Uri, allowed: &[&str]) -> Result<Self, GatewayError> {
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        for (name, _) in &pairs {
            if !allowed.contains(&name.as_str()) {
                return Err(FieldError::invalid(
                    name.as_str(),
                    format!(
                        "unknown query parameter (expected one of: {})",
                        allowed.join(", ")
                    ),
                )
                .into());
            }
        }
        Ok(Self(pairs))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn limit(&self) -> Result<usize, GatewayError> {
        match self.get("limit") {
            None => Ok(PAGE_DEFAULT),
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=PAGE_MAX).contains(&n) => Ok(n),
                _ => Err(FieldError::invalid(
                    "limit",
                    format!("must be a whole number from 1 to {PAGE_MAX}"),
                )
                .into()),
            },
        }
    }
}
