"""The result in the clinic's records: each study's report sent to the clinic's information
systems (``[[records.receivers]]``) as HL7 v2 ORU^R01 over MLLP or a FHIR R4
DiagnosticReport, retried and held like the PACS results (``docs/integration/records.md``).

``content`` says what a report holds, ``hl7`` and ``fhir`` write it as a message, ``mllp``
and ``fhir_link`` carry it (the seam: ``link``), ``queue`` puts it in the records outbox,
``sender`` delivers it.
"""
