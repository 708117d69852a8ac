package ec2sim

import (
	"encoding/xml"
	"errors"
	"net/http"
)

type stsErrorXML struct {
	XMLName xml.Name `xml:"ErrorResponse"`
	Xmlns   string   `xml:"xmlns,attr"`
	Error   struct {
		Type    string `xml:"Type"`
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	} `xml:"Error"`
	RequestID string `xml:"RequestId"`
}

type stsCallerIdentityXML struct {
	XMLName xml.Name `xml:"GetCallerIdentityResponse"`
	Xmlns   string   `xml:"xmlns,attr"`
	Result  struct {
		Arn     string `xml:"Arn"`
		UserID  string `xml:"UserId"`
		Account string `xml:"Account"`
	} `xml:"GetCallerIdentityResult"`
	RequestID string `xml:"ResponseMetadata>RequestId"`
}

// serveSTS answers the STS Query protocol: GetCallerIdentity, which the amazon
// plugin's access config calls to validate credentials (and which gives the account id
// a manifest's <user> must carry).
func (s *Server) serveSTS(w http.ResponseWriter, reqID, action string, sig *sigv4Request, authErr error) {
	fail := func(status int, code, msg string) {
		var x stsErrorXML
		x.Xmlns = STSNamespace
		x.Error.Type, x.Error.Code, x.Error.Message = "Sender", code, msg
		x.RequestID = reqID
		writeXML(w, status, &x)
	}
	if authErr != nil {
		s.cfg.Logf("ec2sim: %s sts %s rejected: %v", reqID, action, authErr)
		var ae *authError
		errors.As(authErr, &ae)
		switch {
		case ae == nil || ae.kind == "auth":
			fail(403, "InvalidClientTokenId", "The security token included in the request is invalid.")
		case ae.kind == "missing":
			fail(400, "MissingAuthenticationToken", ae.msg)
		case ae.kind == "expired":
			fail(403, "SignatureDoesNotMatch", "Signature expired: "+ae.msg)
		default:
			fail(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.")
		}
		return
	}
	if action != "GetCallerIdentity" {
		fail(400, "InvalidAction", "Could not find operation "+action+" for version 2011-06-15")
		return
	}
	var x stsCallerIdentityXML
	x.Xmlns = STSNamespace
	x.Result.Account = s.cfg.AccountID
	x.Result.UserID = "AIDA" + s.cfg.AccountID + "SIMUSER"
	x.Result.Arn = "arn:aws:iam::" + s.cfg.AccountID + ":user/instancestore-sim"
	x.RequestID = reqID
	s.cfg.Logf("ec2sim: %s sts GetCallerIdentity ok", reqID)
	writeXML(w, http.StatusOK, &x)
}
