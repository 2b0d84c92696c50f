//! What the engine supports, by name (variables are in `var.rs`): operators,
//! transformations, actions and `ctl` options. A rule naming anything else
//! is refused at load, never ignored.

/// Operators, canonical spelling.
pub const OPERATORS: &[&str] = &[
    "beginsWith",
    "contains",
    "containsWord",
    "detectSQLi",
    "detectXSS",
    "endsWith",
    "eq",
    "ge",
    "geoLookup",
    "gt",
    "ipMatch",
    "ipMatchFromFile",
    "le",
    "lt",
    "noMatch",
    "pm",
    "pmFromFile",
    "rx",
    "rxGlobal",
    "streq",
    "strmatch",
    "unconditionalMatch",
    "validateByteRange",
    "validateUrlEncoding",
    "validateUtf8Encoding",
    "verifyCC",
    "within",
];

/// Other spellings ModSecurity accepts for an operator.
pub const OPERATOR_ALIASES: &[(&str, &str)] =
    &[("pmf", "pmFromFile"), ("ipMatchF", "ipMatchFromFile")];

/// Actions, canonical spelling.
pub const ACTIONS: &[&str] = &[
    "accuracy",
    "allow",
    "auditlog",
    "block",
    "capture",
    "chain",
    "ctl",
    "deny",
    "drop",
    "expirevar",
    "id",
    "initcol",
    "log",
    "logdata",
    "maturity",
    "msg",
    "multiMatch",
    "noauditlog",
    "nolog",
    "pass",
    "phase",
    "redirect",
    "rev",
    "sanitiseArg",
    "sanitiseMatched",
    "sanitiseMatchedBytes",
    "sanitiseRequestHeader",
    "sanitiseResponseHeader",
    "setenv",
    "setvar",
    "severity",
    "skip",
    "skipAfter",
    "status",
    "t",
    "tag",
    "ver",
];

pub const ACTION_ALIASES: &[(&str, &str)] = &[
    ("sanitizeArg", "sanitiseArg"),
    ("sanitizeMatched", "sanitiseMatched"),
    ("sanitizeMatchedBytes", "sanitiseMatchedBytes"),
    ("sanitizeRequestHeader", "sanitiseRequestHeader"),
    ("sanitizeResponseHeader", "sanitiseResponseHeader"),
];

/// Actions that stop (or settle) the transaction.
pub const DISRUPTIVE: &[&str] = &["allow", "block", "deny", "drop", "pass", "redirect"];

/// `ctl:` options.
pub const CTL_OPTIONS: &[&str] = &[
    "auditEngine",
    "auditLogParts",
    "forceRequestBodyVariable",
    "requestBodyAccess",
    "requestBodyLimit",
    "requestBodyProcessor",
    "responseBodyAccess",
    "responseBodyLimit",
    "ruleEngine",
    "ruleRemoveById",
    "ruleRemoveByMsg",
    "ruleRemoveByTag",
    "ruleRemoveTargetById",
    "ruleRemoveTargetByMsg",
    "ruleRemoveTargetByTag",
];

/// Directives that only configure ModSecurity's own logging and storage:
/// accepted with a warning, since Palisade logs its own way.
pub const LOGGING_DIRECTIVES: &[&str] = &[
    "SecAuditEngine",
    "SecAuditLog",
    "SecAuditLog2",
    "SecAuditLogDirMode",
    "SecAuditLogFileMode",
    "SecAuditLogFormat",
    "SecAuditLogParts",
    "SecAuditLogRelevantStatus",
    "SecAuditLogStorageDir",
    "SecAuditLogType",
    "SecDebugLog",
    "SecDebugLogLevel",
    "SecTmpDir",
    "SecDataDir",
    "SecUploadDir",
    "SecUploadKeepFiles",
];

/// The canonical name for `name` in `canon` (case-insensitively, then via
/// the aliases), if supported.
pub fn canonical(
    name: &str,
    canon: &[&'static str],
    aliases: &[(&str, &'static str)],
) -> Option<&'static str> {
    canon
        .iter()
        .find(|c| c.eq_ignore_ascii_case(name))
        .copied()
        .or_else(|| {
            aliases
                .iter()
                .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
                .map(|(_, c)| *c)
        })
}
