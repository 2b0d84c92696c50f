//! What the engine supports, by name: variables, operators,
//! transformations, actions and `ctl` options. A rule naming anything else
//! is refused at load, never ignored.

/// Variables, upper case. Collections and scalars alike.
pub const VARIABLES: &[&str] = &[
    "ARGS",
    "ARGS_COMBINED_SIZE",
    "ARGS_GET",
    "ARGS_GET_NAMES",
    "ARGS_NAMES",
    "ARGS_POST",
    "ARGS_POST_NAMES",
    "AUTH_TYPE",
    "DURATION",
    "ENV",
    "FILES",
    "FILES_COMBINED_SIZE",
    "FILES_NAMES",
    "FILES_SIZES",
    "FULL_REQUEST",
    "FULL_REQUEST_LENGTH",
    "GEO",
    "GLOBAL",
    "HIGHEST_SEVERITY",
    "INBOUND_DATA_ERROR",
    "IP",
    "MATCHED_VAR",
    "MATCHED_VARS",
    "MATCHED_VARS_NAMES",
    "MATCHED_VAR_NAME",
    "MULTIPART_BOUNDARY_QUOTED",
    "MULTIPART_BOUNDARY_WHITESPACE",
    "MULTIPART_CRLF_LF_LINES",
    "MULTIPART_DATA_AFTER",
    "MULTIPART_DATA_BEFORE",
    "MULTIPART_FILENAME",
    "MULTIPART_FILE_LIMIT_EXCEEDED",
    "MULTIPART_HEADER_FOLDING",
    "MULTIPART_INVALID_HEADER_FOLDING",
    "MULTIPART_INVALID_PART",
    "MULTIPART_INVALID_QUOTING",
    "MULTIPART_LF_LINE",
    "MULTIPART_MISSING_SEMICOLON",
    "MULTIPART_NAME",
    "MULTIPART_PART_HEADERS",
    "MULTIPART_STRICT_ERROR",
    "MULTIPART_UNMATCHED_BOUNDARY",
    "OUTBOUND_DATA_ERROR",
    "PATH_INFO",
    "QUERY_STRING",
    "REMOTE_ADDR",
    "REMOTE_HOST",
    "REMOTE_PORT",
    "REMOTE_USER",
    "REQBODY_ERROR",
    "REQBODY_ERROR_MSG",
    "REQBODY_PROCESSOR",
    "REQBODY_PROCESSOR_ERROR",
    "REQUEST_BASENAME",
    "REQUEST_BODY",
    "REQUEST_BODY_LENGTH",
    "REQUEST_COOKIES",
    "REQUEST_COOKIES_NAMES",
    "REQUEST_FILENAME",
    "REQUEST_HEADERS",
    "REQUEST_HEADERS_NAMES",
    "REQUEST_LINE",
    "REQUEST_METHOD",
    "REQUEST_PROTOCOL",
    "REQUEST_URI",
    "REQUEST_URI_RAW",
    "RESOURCE",
    "RESPONSE_BODY",
    "RESPONSE_CONTENT_LENGTH",
    "RESPONSE_CONTENT_TYPE",
    "RESPONSE_HEADERS",
    "RESPONSE_HEADERS_NAMES",
    "RESPONSE_PROTOCOL",
    "RESPONSE_STATUS",
    "RULE",
    "SERVER_ADDR",
    "SERVER_NAME",
    "SERVER_PORT",
    "SESSION",
    "STATUS_LINE",
    "TIME",
    "TIME_DAY",
    "TIME_EPOCH",
    "TIME_HOUR",
    "TIME_MIN",
    "TIME_MON",
    "TIME_SEC",
    "TIME_WDAY",
    "TIME_YEAR",
    "TX",
    "UNIQUE_ID",
    "URLENCODED_ERROR",
    "USER",
    "XML",
];

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
