package sandbox

import "time"

// fieldKind is a field's data type, which decides literal checks and rendering.
type fieldKind uint8

const (
	kindID fieldKind = iota
	kindBool
	kindString
	kindDateTime
	kindRef
)

// fieldID names the stored attribute a field reads.
type fieldID uint8

const (
	fID fieldID = iota
	fIsDeleted
	fEmail
	fOptOut
	fCustom
	fIsConverted
	fConvertedContactID
	fLastModifiedDate
	fSystemModstamp
)

// fieldDef is one describe entry.
type fieldDef struct {
	Name     string
	Label    string
	SFType   string // describe "type"
	Kind     fieldKind
	ID       fieldID
	Writable bool
}

// schema is the field list of one object type as the org is configured now.
type schema struct {
	typ    objType
	fields []fieldDef
}

// lookup finds a field case-insensitively.
func (s *schema) lookup(name string) (fieldDef, bool) {
	for _, f := range s.fields {
		if equalFold(f.Name, name) {
			return f, true
		}
	}
	return fieldDef{}, false
}

// buildSchema lists the fields of t given the custom field's state.
func buildSchema(t objType, custom string, installed, writable bool) *schema {
	fs := []fieldDef{
		{Name: "Id", Label: t.String() + " ID", SFType: "id", Kind: kindID, ID: fID},
		{Name: "IsDeleted", Label: "Deleted", SFType: "boolean", Kind: kindBool, ID: fIsDeleted},
		{Name: "Email", Label: "Email", SFType: "email", Kind: kindString, ID: fEmail, Writable: true},
		{Name: "HasOptedOutOfEmail", Label: "Email Opt Out", SFType: "boolean", Kind: kindBool, ID: fOptOut, Writable: true},
	}
	if t == typeLead {
		fs = append(fs,
			fieldDef{Name: "IsConverted", Label: "Converted", SFType: "boolean", Kind: kindBool, ID: fIsConverted},
			fieldDef{Name: "ConvertedContactId", Label: "Converted Contact ID", SFType: "reference", Kind: kindRef, ID: fConvertedContactID})
	}
	fs = append(fs,
		fieldDef{Name: "LastModifiedDate", Label: "Last Modified Date", SFType: "datetime", Kind: kindDateTime, ID: fLastModifiedDate},
		fieldDef{Name: "SystemModstamp", Label: "System Modstamp", SFType: "datetime", Kind: kindDateTime, ID: fSystemModstamp})
	if installed {
		fs = append(fs, fieldDef{Name: custom, Label: "Sales Opt Out", SFType: "boolean", Kind: kindBool, ID: fCustom, Writable: writable})
	}
	return &schema{typ: t, fields: fs}
}

// sfTime renders a date-time the way REST JSON does: 2013-05-20T20:49:32.000+0000.
func sfTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000-0700")
}

// jsonValue renders field f of r for a JSON response.
func jsonValue(r *rec, f fieldID) any {
	switch f {
	case fID:
		return r.id.String()
	case fIsDeleted:
		return r.has(flagDeleted)
	case fEmail:
		if r.email == "" {
			return nil
		}
		return r.email
	case fOptOut:
		return r.has(flagOptedOut)
	case fCustom:
		return r.has(flagCustom)
	case fIsConverted:
		return r.has(flagConverted)
	case fConvertedContactID:
		if r.converted == nil {
			return nil
		}
		return r.converted.String()
	case fLastModifiedDate:
		if r.lastMod == 0 {
			return nil
		}
		return sfTime(r.lastMod)
	case fSystemModstamp:
		if r.modstamp == 0 {
			return nil
		}
		return sfTime(r.modstamp)
	}
	return nil
}
